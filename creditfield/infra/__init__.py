"""Running the science: configs checked, runs dispatched, results and checkpoints written,
compilation, devices and processes, benchmarks. The memo's concepts live one level up."""
