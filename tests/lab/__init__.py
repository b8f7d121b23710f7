"""What only the tests and the benchmarks need: hostile servers and the exporter as a child process.

The shipped package keeps what the ``demo`` command needs (``exporter.lab``: certificate factory,
Mosquitto launcher, ports); everything here stays out of the wheel and the image.
"""
