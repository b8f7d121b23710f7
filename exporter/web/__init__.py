"""The HTTP face: the aiohttp app (app.py), its listeners and defences (server.py), --web.config.file
(webconfig.py, basicauth.py), OpenMetrics (openmetrics.py), /probe (multitarget.py) and the status
pages (status/). It reads results and metrics; nothing below it imports it."""
