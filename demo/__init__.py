"""dawdle's demo: a mixed workload worked on asyncio or Trio, with live progress (`nox -s demo`)."""
