"""The fleet status page: every broker's certificate and diagnosis in a browser (issue 17).

fleet.py (rows assessed by `check`'s own code, filtering, paging, the JSON document), html.py (escaping
builders, the page shell), fleet_page.py and broker_page.py (the pages), routes.py (aiohttp).
"""
