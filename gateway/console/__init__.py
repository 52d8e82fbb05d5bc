"""The web console under /ui/ on the registry's own port (issue 17).

Server-rendered HTML (Jinja2 templates in `templates/`, our own small CSS and JavaScript in
`static/`; nothing fetched from elsewhere), built on the same gRPC planes as the registry API:
every page is one or a few calls of the metadata plane's ConsoleService, which applies the signed-in
account's permissions itself. No SQL, no files.

- `client`: the ConsoleService client (deadlines; failures as RegistryError);
- `security`: session and CSRF cookies, the signed OIDC sign-in cookie, security headers (CSP);
- `views`: what a manifest payload shows (layers, config, annotations, platforms), sizes, times;
- `render`: the Jinja2 environment (built on first use) and HTML error pages;
- `pages`: browsing (search, tags, manifests, referrers, tag delete), sign-in and out, OIDC, the
  CLI secret; `admin`: the administrator's pages;
- `routes`: the route table, mounted by gateway.routes before the catch-all.

Sessions: a random secret in an HttpOnly cookie (`SameSite=Lax`, `Secure` when the browser came
over HTTPS), resolved by the metadata plane on every page; CSRF: every form carries a token derived
from the session secret (before sign-in, a double-submit cookie), and POSTs from another origin are
refused.
"""
