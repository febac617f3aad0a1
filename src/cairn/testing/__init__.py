"""Testing support: `environment()` (a database, a client and a worker, with time skipping),
`replay()` (check recorded journals against the current code) and a pytest plugin (`cairn_env`).

```python
from cairn.testing import environment

async with environment() as env:
    result = await env.client.run(Renewal, "u-1")      # a 30-day durable sleep: instant
```
"""

from __future__ import annotations

from cairn.testing.environment import Environment, EnvironmentStalled, Replacement, environment
from cairn.testing.replay import ReplayReport, replay

__all__ = ["Environment", "EnvironmentStalled", "Replacement", "ReplayReport", "environment", "replay"]
