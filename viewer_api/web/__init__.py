"""The web reading room: static HTML pages and ES modules that call the JSON API.

No build step and nothing fetched at run time: plain HTML, CSS and JavaScript modules under
``pages/`` and ``static/``, served by the ``router`` below; each page's body sits in one
shell (``shell.html``, ``header.html``). Pages hold no data; ``static/shell.js`` starts each
one: it asks ``GET /api/v1/auth/session`` who is signed in and what their role may use.
The browser's session is an HttpOnly cookie (``POST /api/v1/auth/session``), which scripts
never see; ``static/api.js`` adds the session's CSRF token to every change.
"""

from viewer_api.web.pages import PAGES, router

__all__ = ["PAGES", "router"]
