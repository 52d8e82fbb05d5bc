"""Access control in the gateway (issue 6). Off unless `auth.mode` is "basic" or "token".

Modules: `rules` (what each route needs, declared in the route table), `gate` (identify the caller,
check the rule, refuse with the right code), `scopes` (Docker scope grammar and the `access`
claim), `keys` and `tokens` (ES256/RS256 JWTs, key ids, rotation, external JWKS), `basic` (Basic
credentials and the short credential cache), `upload_state` (binding upload sessions to accounts),
`token_endpoint` (GET/POST /token), `accounts` (the AccountService client), `setup` (settings →
AuthGate). Accounts and grants live in the metadata plane (services/metadata/accounts).

Refusals, by case:
| case                                                   | answer |
|--------------------------------------------------------|--------|
| no credentials / bad token (expired, unknown key, alg none, HS256, wrong iss/aud) | 401 UNAUTHORIZED + challenge (`error="invalid_token"` for a bad token) |
| token mode, valid token without the scope              | 403 DENIED + Bearer challenge with `error="insufficient_scope"` (see gate.py) |
| basic mode, authenticated but not permitted            | 403 DENIED |
| invalid repository name (after authentication)         | 400 NAME_INVALID |
| upload session of another account / without `_state`  | 404 BLOB_UPLOAD_UNKNOWN |
| mount from a repository the caller cannot pull         | 202 new session (no link made) |
"""
