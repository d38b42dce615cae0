from agile_cli.main import main

raise SystemExit(main())
