"""`python -m npqwen.generate`: see npqwen/cli.py. (The Python API is `npqwen.generate(...)`,
from npqwen/generation.py.)"""

import sys

from .cli import generate_main

if __name__ == "__main__":
    sys.exit(generate_main())
