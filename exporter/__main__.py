from mqtt_cert_exporter.cli import main

raise SystemExit(main())
