import sys

from hpc_es.cli import main

sys.exit(main())
