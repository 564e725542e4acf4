"""Database access that runs natively on asyncio and Trio."""
