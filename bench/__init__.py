"""vlaunch benchmarks. `make bench` (= `python -m bench.run_cpu`) runs the CPU ones."""
