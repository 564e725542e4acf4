"""README, "Retention", as a user writes it (durations as text, seconds or timedeltas)."""

import datetime

import dawdle

app = dawdle.App(retention={"succeeded": "1d", "failed": "30d"})
other = dawdle.App(retention={"succeeded": 3600, "cancelled": datetime.timedelta(days=7)})
