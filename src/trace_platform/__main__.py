from trace_platform.cli.main import main

main()
