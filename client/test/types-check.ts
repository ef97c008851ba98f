// Compile-only check of latchkey.d.ts (npm run typecheck); not run by node --test.
import { createClient, secureFetch, type Client, type ClientOptions } from '../latchkey.js';

const options: ClientOptions = {
  refreshUrl: '/api/v1/auth/refresh',
  loginUrl: '/login',
  onAuthFail: () => {},
  refreshTimeoutMs: 10_000,
  fetch: (input, init) => fetch(input, init),
};
const client: Client = createClient(options);
const a: Promise<Response> = client.secureFetch('/api/v1/me');
const b: Promise<Response> = secureFetch(new URL('http://localhost/api/v1/me'), { method: 'POST', body: '{}' }, () => {});
const c: Promise<Response> = secureFetch(new Request('http://localhost/'));
void [a, b, c, createClient()];

import { createToast, toast, toastAuthFail, type ToastHandle, type Toaster } from '../latchkey-toast.js';
const show: Toaster = createToast({ styled: false, timeoutMs: 3000, dismissLabel: 'Close' });
const h: ToastHandle = show('Saved', { action: { label: 'Undo', href: '/undo', onClick: (e) => e.preventDefault() }, onDismiss: () => {} });
const open: boolean = h.open();
h.dismiss();
toast('Hello').element.remove();
const toastClient: Client = createClient({ onAuthFail: toastAuthFail({ loginPath: '/login', delayMs: 5000, toast: show }) });
void [open, toastClient];
