// How another Node service verifies latchkey's access tokens offline (npm `jose`).
//   echo "$ACCESS_TOKEN" | node verify.mjs http://localhost:8080
// The argument is latchkey's PUBLIC_URL (the tokens' `iss` and `aud`); the token comes on stdin.
// Prints `valid sub=… sid=…` and exits 0, or `invalid: <reason>` and exits 1.
import { createRemoteJWKSet, jwtVerify } from 'jose';

const issuer = process.argv[2].replace(/\/+$/, '');
// Fetched once, then cached (jose: 10 min at most, refetched on an unknown `kid`, 30 s apart).
const jwks = createRemoteJWKSet(new URL(issuer + '/.well-known/jwks.json'), { cacheMaxAge: 60_000 });

/** The pinned checks: EdDSA only, `typ: at+jwt`, `iss`, `aud`, `exp`/`nbf` (5 s clock skew). */
export const verify = (token) =>
  jwtVerify(token, jwks, { algorithms: ['EdDSA'], typ: 'at+jwt', issuer, audience: issuer, clockTolerance: 5, requiredClaims: ['exp', 'sub'] });

let token = '';
for await (const chunk of process.stdin) token += chunk;
try {
  const { payload } = await verify(token.trim());
  console.log(`valid sub=${payload.sub} sid=${payload.sid}`);
} catch (error) {
  console.log(`invalid: ${error.code ?? error.message}`);
  process.exitCode = 1;
}
