/**
 * latchkey toast: optional, dependency-free, non-blocking messages; `toastAuthFail()` is an
 * `onAuthFail` for `secureFetch` that shows one instead of `alert()`.
 */

export interface ToastOptions {
  /** A link shown after the message. `onClick` runs on click (it may `preventDefault()`). */
  action?: { label: string; href: string; onClick?: (event: MouseEvent) => void };
  /** Dismiss by itself after this many milliseconds. Default: the toaster's (`0` = never). */
  timeoutMs?: number;
  /** Runs once when the toast goes, however it goes (button, Escape, timeout, `dismiss()`). */
  onDismiss?: () => void;
}

export interface ToastHandle {
  /** The toast element (class `latchkey-toast`); its message has `role="alert"`. */
  element: HTMLElement;
  /** Removes the toast; a no-op when it is already gone. */
  dismiss(): void;
  /** Whether the toast is still shown. */
  open(): boolean;
}

export interface ToasterOptions {
  /** Where the toast region (class `latchkey-toast-region`) goes. Default `document.body`. */
  root?: HTMLElement;
  /** Built-in look through the CSSOM (CSP-safe). `false`: classes only, style them yourself. Default `true`. */
  styled?: boolean;
  /** Toasts dismiss by themselves after this many milliseconds. Default `0`: never. */
  timeoutMs?: number;
  /** Accessible name of each toast's close button. Default `'Dismiss'`. */
  dismissLabel?: string;
}

/** Shows `message` as a toast. Never moves the focus; Escape dismisses the newest toast. */
export type Toaster = (message: string, options?: ToastOptions) => ToastHandle;

/** A toaster with its own settings. */
export declare function createToast(options?: ToasterOptions): Toaster;

/** Shows a toast with the default toaster (created on first use). */
export declare const toast: Toaster;

export interface AuthFailOptions {
  /** Login page. Default `'/login'`. */
  loginPath?: string;
  /** Default `'Session expired. Please log in again.'`. */
  message?: string;
  /** Text of the link to the login page. Default `'Log in'`. */
  actionLabel?: string;
  /**
   * After this many milliseconds the page goes to `loginPath?next=<current path and query>`
   * by itself (`location.replace`). Dismissing the toast cancels that. `Infinity`: only when
   * the link is followed. Default `5000`.
   */
  delayMs?: number;
  /** The toaster to use. Default: `toast`. */
  toast?: Toaster;
}

/**
 * An `onAuthFail` handler for `secureFetch`/`createClient` that shows a toast instead of
 * `alert()`; does nothing on the login page itself, and shows one toast at a time.
 */
export declare function toastAuthFail(options?: AuthFailOptions): () => void;
