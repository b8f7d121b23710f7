"""What only the tests and the benchmarks need: hostile servers, the exporter as a child process, and
brokers other than Mosquitto (RabbitMQ, amqtt) with their process-group launcher.

The shipped package keeps what the ``demo`` command needs (``exporter.lab``: certificate factory,
Mosquitto launcher, ports); everything here stays out of the wheel and the image.
"""
