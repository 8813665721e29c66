"""The process harness of tests and benchmarks: real redis-server, predictor and transformer
processes on free ports, their clients, and the SST-2 data. Tests and bench import it; it imports neither."""
