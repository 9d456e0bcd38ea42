"""`python -m bench`: the benchmark (main.py)."""

from .main import main

if __name__ == "__main__":
    main()
