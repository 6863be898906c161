"""`python -m bot`: the same as the `opsgate` command."""

from bot.launch import main

main()
