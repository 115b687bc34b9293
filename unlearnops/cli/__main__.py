"""`python -m unlearnops.cli ...`: the same CLI as the `unlearnops` console script."""

from . import run

if __name__ == "__main__":
    run()
