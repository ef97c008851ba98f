// A real OpenID Provider (the certified `oidc-provider` package) for latchkey's OpenID
// sign-in tests (Google's preset and named providers; a test may run two). Started by
// crates/latchkey/tests/google.rs; not for any other use.
//
// Environment: CLIENT_ID, CLIENT_SECRET, REDIRECT_URI (latchkey's callback); EMAIL_DOMAIN
// (optional, default example.com).
// Listens on 127.0.0.1 on a free port and prints one JSON line: {"issuer": "http://127.0.0.1:PORT"}.
//
// Accounts: devInteractions' login form accepts any login; the login becomes the account id
// and `sub`, the email is `<login>@EMAIL_DOMAIN`, verified unless the login starts with
// `unverified-`.
import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const { CLIENT_ID, CLIENT_SECRET, REDIRECT_URI } = process.env;
const EMAIL_DOMAIN = process.env.EMAIL_DOMAIN || 'example.com';
if (!CLIENT_ID || !CLIENT_SECRET || !REDIRECT_URI) {
  console.error('CLIENT_ID, CLIENT_SECRET and REDIRECT_URI must be set');
  process.exit(2);
}

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'oidc-provider-test-key', use: 'sig', alg: 'RS256' };

  const provider = new Provider(issuer, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [signingKey] },
    // Put the scopes' claims (email, email_verified, name) in the ID token, as Google does.
    conformIdTokenClaims: false,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() {
          return {
            sub: id,
            email: `${id}@${EMAIL_DOMAIN}`,
            email_verified: !id.startsWith('unverified-'),
            name: `Test ${id}`,
          };
        },
      };
    },
    cookies: { keys: ['latchkey-test-only-cookie-key'] },
    features: { devInteractions: { enabled: true } },
  });
  server.on('request', provider.callback());
  console.log(JSON.stringify({ issuer }));
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => process.exit(0));
}
