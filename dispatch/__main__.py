from dispatch.cli import main

raise SystemExit(main())
