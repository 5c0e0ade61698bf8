"""``python -m examples.embedded``: the app on http://127.0.0.1:8000/ until Ctrl-C."""

import asyncio
import contextlib

from examples.embedded.app import main

with contextlib.suppress(KeyboardInterrupt):
    asyncio.run(main())
