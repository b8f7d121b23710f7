from mqtt_cert_exporter.launch import main

raise SystemExit(main())
