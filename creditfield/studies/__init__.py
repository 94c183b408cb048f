"""Studies: each turns a config into rows, plots and files in a workdir."""
