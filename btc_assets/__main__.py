"""``python -m btc_assets`` is the same as the ``btc-assets`` command."""

import sys

from btc_assets.cli import main

sys.exit(main())
