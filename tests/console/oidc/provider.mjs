// A real OpenID Connect provider for the console tests: panva's oidc-provider with its development
// login and consent pages (any user name and password sign in). Configured from the environment:
//   OIDC_PORT, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI (one or several, space-separated),
//   OIDC_GROUPS: JSON object {"user name": ["group", ...]} (users not listed have no groups).
// Prints "oidc provider ready" once it listens on 127.0.0.1:OIDC_PORT.
import Provider from "oidc-provider";

const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const groups = JSON.parse(process.env.OIDC_GROUPS || "{}");

const provider = new Provider(issuer, {
  clients: [{
    client_id: process.env.OIDC_CLIENT_ID,
    client_secret: process.env.OIDC_CLIENT_SECRET,
    redirect_uris: process.env.OIDC_REDIRECT_URI.split(" ").filter(Boolean),
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  }],
  claims: { openid: ["sub"], profile: ["preferred_username", "name", "groups"] },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, name: id, groups: groups[id] || [] };
      },
    };
  },
  pkce: { required: () => true },
  cookies: { keys: ["lading-test-cookie-key"] },
  features: { devInteractions: { enabled: true } },
});
provider.proxy = false;

provider.listen(port, "127.0.0.1", () => {
  console.log("oidc provider ready");
});
