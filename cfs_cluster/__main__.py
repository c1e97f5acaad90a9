from cfs_cluster.cli.main import main

raise SystemExit(main())
