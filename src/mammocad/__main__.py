"""``python -m mammocad``: the ``mammocad`` command, for launchers that start a module.

``torchrun ... -m mammocad train ...`` starts it once per process (see docs/training.md, Several machines).
"""

from mammocad.cli.main import main

if __name__ == "__main__":
    main()
