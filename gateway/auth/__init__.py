"""Access control in the gateway (issue 6). Off unless `auth.mode` is "basic" or "token".

Modules: `rules` (what each route needs, declared in the route table), `gate` (identify the caller,
check the rule, refuse with the right code), `scopes` (Docker scope grammar and the `access`
claim), `keys` and `tokens` (ES256/RS256 JWTs, key ids, rotation, external JWKS, low-S), `basic`
(Basic credentials and the short credential cache), `logins` (password checks: cache, trusted
credentials, throttle, refusal log), `throttle` (backoff per address/account), `revocations` (the
set of accounts that changed lately), `change_feed` (follows the metadata plane's change feed into
that set), `account_status` (is a token still good: the set, or the metadata plane while the feed
is down), `upload_state` (binding upload sessions to accounts), `token_endpoint` (GET/POST /token),
`accounts` (the AccountService client), `setup` (settings → AuthGate). Accounts and grants live in
the metadata plane (services/metadata/accounts).

Refusals, by case:
| case                                                   | answer |
|--------------------------------------------------------|--------|
| no credentials / bad token (expired, unknown key, alg none, HS256, wrong iss/aud) | 401 UNAUTHORIZED + challenge (`error="invalid_token"` for a bad token) |
| token mode, valid token without the scope              | 403 DENIED + Bearer challenge with `error="insufficient_scope"` (see gate.py) |
| basic mode, authenticated but not permitted            | 403 DENIED |
| invalid repository name (after authentication)         | 400 NAME_INVALID |
| upload session of another account / without `_state`  | 404 BLOB_UPLOAD_UNKNOWN |
| token of an account deleted, disabled or revoked since | 401 UNAUTHORIZED, `error="invalid_token"` (within 2 s) |
| password check while its address/account backs off    | 429 TOOMANYREQUESTS + `Retry-After` |
| LDAP directory down (a directory account's login)      | 503 UNAVAILABLE, saying so (never "wrong password") |
| mount from a repository the caller cannot pull         | 202 new session (no link made) |
| POST /token: bad credentials or refresh token         | 401 UNAUTHORIZED, RFC 6749 `error: invalid_grant` too |
| POST /token: no client_id/service/grant_type, another grant type | 400, `error: invalid_request` / `unsupported_grant_type` |
"""
