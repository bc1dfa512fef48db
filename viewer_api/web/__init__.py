"""The web reading room: static HTML pages and ES modules that call the JSON API.

No build step and nothing fetched at run time: plain HTML, CSS and JavaScript modules under
``pages/`` and ``static/``, served by the ``router`` below. Pages hold no data; the scripts
log in with ``POST /api/v1/auth/token`` and keep the bearer token in ``sessionStorage``.
"""

from viewer_api.web.pages import PAGES, router

__all__ = ["PAGES", "router"]
