"""Model architectures written on tvm.relax.frontend.nn, one file per family."""
