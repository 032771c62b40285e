"""`python -m cifar10cnn …` (what torchrun runs: `torchrun --nproc-per-node 2 -m cifar10cnn train …`)."""

import sys

from .cli import main

sys.exit(main())
