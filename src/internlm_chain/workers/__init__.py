"""Scripts that run INSIDE stage runtimes: standard library + that runtime's packages only, never internlm_chain imports (they are run by file path)."""
