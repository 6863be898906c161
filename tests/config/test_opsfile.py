from pathlib import Path

import pytest

from config.opsfile import OpsFileError, is_valid_name, load_ops_file, parse_ops_text

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"

VALID = """
[people]
111 = "alice"
222 = "bob"
[roles]
sre = [111]
admin = [111, 222]
[chats]
deploys = -1001
approvals = -1002
alerts = { critical = -1003, warning = -1004, info = -1004 }
[environments.production]
[services.web]
environment = "production"
unit = "web.service"
health = { url = "http://127.0.0.1:8080/health" }
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(OpsFileError) as caught:
        parse_ops_text(text, "test.toml")
    return caught.value.problems


@pytest.mark.parametrize("name", ["opsgate.example.toml", "demo.toml"])
def test_shipped_ops_files_are_valid(name: str) -> None:
    config = load_ops_file(CONFIG_DIR / name)
    assert config.services
    assert config.people


def test_valid_file_gives_roles_and_chats() -> None:
    config = parse_ops_text(VALID)
    assert config.roles_of(111) == {"sre", "admin"}
    assert config.roles_of(222) == {"admin"}
    assert config.roles_of(999) == frozenset()
    assert config.name_of(222) == "bob"
    assert config.is_listed_chat(-1003)
    assert config.is_listed_chat(111)  # a person's private chat
    assert not config.is_listed_chat(-42)
    assert config.services["web"].health is not None


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('health = { url = "not a url" }', "services.web.health.url: not a valid URL"),
        ('health = { url = "ftp://x/y" }', "services.web.health.url: not a valid URL"),
        ("colour = 1", "services.web.colour: unknown key"),
        ('health = { url = "http://x", expect_status = 999 }', "services.web.health.expect_status"),
    ],
)
def test_service_errors_name_their_path(snippet: str, expected: str) -> None:
    text = '[services.web]\nenvironment = "production"\nunit = "web.service"\n' + snippet
    problems = problems_of(text)
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(
        """
[people]
abc = "x"
12 = "Bad Name"
[chats]
deploys = "the deploy group"
[services.web]
unit = "web"
"""
    )
    assert "people.abc: not a Telegram user id (a whole number)" in problems
    assert any(p.startswith("people.12: not a valid name") for p in problems)
    assert "chats.deploys: not a whole number" in problems
    assert "services.web.environment: required but missing (or list environments)" in problems
    assert any(p.startswith("services.web.unit: not a valid systemd unit name") for p in problems)
    assert len(problems) == 5


def test_references_are_checked() -> None:
    problems = problems_of(
        """
[people]
1 = "alice"
[roles]
sre = [1, 2]
[environments.production]
[services.web]
environment = "prod"
unit = "web.service"
"""
    )
    assert problems == [
        "roles.sre[1]: 2 is not listed in [people]",
        "services.web.environment: unknown environment 'prod' (known: production)",
    ]


def test_syntax_error_gives_line_and_column() -> None:
    problems = problems_of("[services.web\nunit = ")
    assert len(problems) == 1
    assert problems[0].startswith("(syntax):")
    assert "line 1" in problems[0]


def test_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(OpsFileError) as caught:
        load_ops_file(tmp_path / "nope.toml")
    assert caught.value.problems[0].startswith("(file): cannot read")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("web", True),
        ("web-2_a", True),
        ("Web", False),
        ("../x", False),
        ("a" * 33, False),
        ("", False),
    ],
)
def test_name_validation(text: str, ok: bool) -> None:
    assert is_valid_name(text) is ok


HOSTS = """
[hosts.web1]
address = "10.0.0.5"
user = "deploy"
port = 2222
identity_file = "/etc/opsgate/id_ed25519"
known_hosts_file = "/etc/opsgate/known_hosts"
prefix = ["sudo", "-n"]
[hosts.box]
prefix = ["nsenter", "-t", "1", "-m", "-p"]
[services.web]
environment = "production"
unit = "web.service"
host = "web1"
[services.worker]
environment = "production"
unit = "worker.service"
"""


def test_hosts_and_service_host_are_parsed() -> None:
    config = parse_ops_text(HOSTS)
    web1 = config.hosts["web1"]
    assert (web1.address, web1.user, web1.port) == ("10.0.0.5", "deploy", 2222)
    assert web1.prefix == ["sudo", "-n"]
    assert web1.multiplex and not web1.accept_new_host_keys
    assert config.hosts["box"].address is None  # this machine, behind a prefix
    assert config.services["web"].hosts_in() == ["web1"]
    assert config.services["worker"].hosts_in() == ["local"]  # the default


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('address = "-oProxyCommand=x"', "hosts.h.address: not a valid host name or IP address"),
        ('address = "a b"', "hosts.h.address: not a valid host name or IP address"),
        ('address = "h"\nuser = "Root;x"', "hosts.h.user: not a valid user name"),
        ('prefix = ["sudo", "a b"]', "hosts.h.prefix[1]: not a plain command word"),
        ('address = "h"\nidentity_file = "key"', "hosts.h.identity_file: not an absolute path"),
        ('address = "h"\nport = 0', "hosts.h.port: input should be greater than or equal to 1"),
        ('address = "h"\nshell = "bash"', "hosts.h.shell: unknown key"),
        ('user = "deploy"', "hosts.h.user: only used over ssh (set address)"),
    ],
)
def test_host_errors_name_their_path(snippet: str, expected: str) -> None:
    problems = problems_of("[hosts.h]\n" + snippet)
    assert any(p.startswith(expected) for p in problems), problems


def test_service_host_must_exist_and_local_is_reserved() -> None:
    problems = problems_of(
        """
[hosts.local]
address = "10.0.0.9"
[hosts.web1]
address = "10.0.0.5"
[services.web]
environment = "production"
unit = "web.service"
host = "web2"
"""
    )
    assert problems == [
        "hosts.local: the name 'local' is reserved for this machine",
        "services.web.host: unknown host 'web2' (known: local, web1)",
    ]


def test_service_managers_and_health_probes() -> None:
    config = parse_ops_text(
        """
[services.api]
environment = "production"
manager = "supervisor"
program = "api"
supervisor_config = "/etc/supervisor/supervisord.conf"
health = { tcp = "127.0.0.1:9000", attempts = 5 }
[services.web]
environment = "production"
unit = "web.service"
health = { url = "http://127.0.0.1:8080/health", expect_json = { status = "healthy" } }
"""
    )
    assert config.services["api"].control_name == "api"
    assert config.services["web"].control_name == "web.service"
    web_health = config.services["web"].health
    assert web_health is not None and web_health.expect_json == {"status": "healthy"}


def test_manager_needs_its_names_and_health_one_probe() -> None:
    problems = problems_of(
        """
[services.api]
environment = "production"
manager = "supervisor"
health = { url = "http://x/health", tcp = "x:1" }
[services.web]
environment = "production"
health = { tcp = "no-port" }
[services.job]
environment = "production"
manager = "cron"
"""
    )
    assert any(p.startswith("services.web.health.tcp: not host:port") for p in problems)
    assert any(p.startswith("services.job.manager") for p in problems)
    problems = problems_of(
        """
[services.api]
environment = "production"
manager = "supervisor"
health = { url = "http://x/health", tcp = "x:1" }
[services.web]
environment = "production"
"""
    )
    assert problems == [
        "services.api.program: required when manager is supervisor",
        "services.api.supervisor_config: required when manager is supervisor",
        "services.api.health: give exactly one of url, tcp, command",
        "services.web.unit: required when manager is systemd",
    ]


def test_segments_hold_targeting_keys_as_text() -> None:
    config = parse_ops_text('[segments]\nbeta = [111, "alice@example.com"]\nstaff = []\n')
    assert {name: s.keys for name, s in config.segments.items()} == {
        "beta": ["111", "alice@example.com"],
        "staff": [],
    }
    assert parse_ops_text(VALID).segments == {}


def test_a_segment_may_hold_rules_on_context_attributes() -> None:
    config = parse_ops_text(
        "[segments.groups]\nkeys = [1001]\n"
        'rules = [{ attribute = "chat_type", values = ["group", "supergroup"] },'
        ' { attribute = "chat_id", op = "not_in", values = [-100500] }]\n'
    )
    groups = config.segments["groups"]
    assert groups.keys == ["1001"]
    assert [(r.attribute, r.op, r.values) for r in groups.rules] == [
        ("chat_type", "in", ["group", "supergroup"]),
        ("chat_id", "not_in", ["-100500"]),
    ]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('Beta = ["1"]', "segments.Beta: not a valid name"),
        ('beta = [""]', "segments.beta.keys[0]: String should have at least 1 character"),
        ("beta = [true]", "segments.beta.keys[0]: not a text value"),
        ('beta = "111"', "segments.beta: a list of targeting keys, or a table of keys and rules"),
        (
            "beta = { rules = [{ attribute = 'chat_type', op = 'is', values = ['x'] }] }",
            "segments.beta.rules[0].op: Input should be 'in', 'not_in'",
        ),
        (
            "beta = { rules = [{ attribute = 'chat type', values = ['x'] }] }",
            "segments.beta.rules[0].attribute:",
        ),
        ("beta = { members = ['1'] }", "segments.beta.members:"),
    ],
)
def test_segment_errors_name_their_path(snippet: str, expected: str) -> None:
    problems = problems_of("[segments]\n" + snippet)
    assert any(p.startswith(expected) for p in problems), problems


def test_blue_green_needs_a_template_unit_two_ports_and_its_section() -> None:
    problems = problems_of(
        """
[services.web]
environment = "production"
unit = "web.service"
deploy = { root = "/srv/web", git = "/git/web", strategy = "blue-green" }
[services.api]
environment = "production"
unit = "api@.service"
[services.api.deploy]
root = "/srv/api"
git = "/git/api"
strategy = "blue-green"
[services.api.deploy.blue_green]
blue_port = 8101
green_port = 8101
health_url = "http://127.0.0.1:{port}/h"
upstream_file = "/etc/nginx/api.conf"
[services.job]
environment = "production"
unit = "job.service"
[services.job.deploy]
root = "/srv/job"
git = "/git/job"
blue_green = { blue_port = 1, green_port = 2, health_url = "http://x:{port}", upstream_file = "/x" }
"""
    )
    assert problems == [
        'services.web.deploy.blue_green: required with strategy = "blue-green"',
        'services.web.unit: blue-green needs a systemd template unit, e.g. "web@.service"',
        "services.api.deploy.blue_green: blue_port and green_port must differ",
        'services.job.deploy.blue_green: only used with strategy = "blue-green"',
    ]
    no_port = problems_of(
        """
[services.api]
environment = "production"
unit = "api@.service"
[services.api.deploy]
root = "/srv/api"
git = "/git/api"
strategy = "blue-green"
blue_green = { blue_port = 1, green_port = 2, health_url = "http://x/h", upstream_file = "/x" }
"""
    )
    assert [p.split(":")[0] for p in no_port] == ["services.api.deploy.blue_green.health_url"]


def test_schema_errors_do_not_hide_reference_errors() -> None:
    problems = problems_of(
        """
[people]
1 = "alice"
2 = "Bad Name"
[roles]
sre = [1, 2, 3]
[chats]
deploys = "the deploy group"
[environments.production]
windows = "always"
[hosts.web1]
address = "-oProxyCommand=x"
[services.web]
environment = "production"
unit = "web"
host = "web1"
[services.worker]
environment = "prod"
unit = "worker.service"
host = "nowhere"
[flags.checkout]
service = "web"
segments = ["beta"]
[flags.search]
service = "api"
chat_types = ["groups"]
"""
    )
    assert problems[:6] == [
        "people.2: not a valid name (lowercase letters, digits, - and _, at most 32)",
        "chats.deploys: not a whole number",
        "environments.production.windows: not a list",
        "services.web.unit: not a valid systemd unit name (e.g. web.service)",
        "hosts.web1.address: not a valid host name or IP address",
        "flags.search.chat_types[0]: Input should be 'private', 'group', 'supergroup' or 'channel'",
    ]
    # What refers to an entry that failed the schema (people 2, production, web1, web) is not
    # reported as unknown too; the rest of the references are checked.
    assert problems[6:] == [
        "roles.sre[2]: 3 is not listed in [people]",
        "services.worker.environment: unknown environment 'prod' (known: production)",
        "services.worker.host: unknown host 'nowhere' (known: local, web1)",
        "flags.checkout.segments[0]: unknown segment 'beta' (known: none)",
    ]


def test_a_failing_entry_is_reported_once() -> None:
    problems = problems_of(
        """
[environments.production]
[services.web]
unit = "web"
health = { url = "not a url" }
"""
    )
    # No "give exactly one of url, tcp, command" or "unit: required" from the taken-out web.
    assert problems == [
        "services.web.unit: not a valid systemd unit name (e.g. web.service)",
        "services.web.health.url: not a valid URL",
        "services.web.environment: required but missing (or list environments)",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "bot = 5\nchats = []\n[roles]\nsre = [7]",
        "[alertmanager]\nservice_label = 1\n[roles]\nsre = [7]",
        '[approvals]\nescalation_role = "nobody"\nrollback_roles = 5\n[roles]\nsre = [7]',
        "[alerts]\nroutes = [{ chat = 1, severity = 'x' }]\n[roles]\nsre = [7]",
    ],
)
def test_reference_checks_survive_broken_sections(text: str) -> None:
    problems = problems_of(text)
    assert "roles.sre[0]: 7 is not listed in [people]" in problems
    assert len(problems) == len(set(problems))


def test_a_broken_section_others_refer_to_gives_only_its_schema_error() -> None:
    text = 'hosts = 5\npeople = []\n[roles]\nsre = [7]\n[services.web]\nenvironment = "a"\n'
    problems = problems_of(text + 'unit = "web.service"\nhost = "web1"')
    assert problems == ["people: not a table", "hosts: not a table"]


def test_a_multi_variant_flag_names_its_split_and_default_among_its_variants() -> None:
    config = parse_ops_text(
        '[flags.banner]\nvariants = { blue = "b", green = "g" }\n'
        'split = { blue = 50, green = 50 }\ndefault = "blue"\n'
    )
    assert config.flags["banner"].split == {"blue": 50, "green": 50}
    problems = problems_of(
        '[flags.a]\nvariants = { x = "1", y = 2 }\nsplit = { x = 1, z = 1 }\ndefault = "w"\n'
        "[flags.b]\nsplit = { x = 1 }\n"
        '[flags.c]\nvariants = { x = "1" }\nsplit = { x = 0 }\ndefault = "x"\n'
    )
    assert problems == [
        "flags.a.variants: values of one type (strings, numbers or tables)",
        "flags.a.default: one of the variants (x, y)",
        "flags.a.split.z: not a variant",
        "flags.b.split: only with variants",
        "flags.c.split: weights of the variants, e.g. { a = 50, b = 50 }",
    ]
