from sidecar.main import main

raise SystemExit(main())
