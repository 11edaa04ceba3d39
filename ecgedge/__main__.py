import sys

from ecgedge.cli import main

sys.exit(main())
