"""`python -m bench` (``make bench``): the comparison benchmark, see bench/compare.py."""

from bench.compare import main

main()
