"""What a probe says on the wire: TCP (``connection``), proxies (``proxy``), TLS (``tls``), the HTTP/1.1
heads and WebSocket frames of ``wss://`` (``http1``, ``websocket``, ``transport``), the MQTT packets
it needs (``mqtt``), and which addresses of a name it connects to (``addresses``)."""
