// @ts-check
/**
 * latchkey toast: optional, dependency-free, non-blocking messages for the browser client
 * (issue 12). Served as-is at `/client/latchkey-toast.js`; `latchkey.js` does not need it.
 *
 *   import { createClient } from '/client/latchkey.js'
 *   import { toastAuthFail } from '/client/latchkey-toast.js'
 *   const { secureFetch } = createClient({ onAuthFail: toastAuthFail({ loginPath: '/login' }) })
 *
 * - A toast is a `role="alert"` message (announced by screen readers) with an optional
 *   action link and a Dismiss button, in a fixed corner of the page. Showing one never moves
 *   the focus; dismissing one (its button, or Escape anywhere on the page) puts the focus back
 *   where it was when the toast appeared if it had moved into the toast.
 * - Styles are set through the CSSOM (`element.style.…`), which a Content-Security-Policy
 *   without 'unsafe-inline' allows (style attributes and <style> elements it blocks).
 *   `styled: false` leaves the look to the app's stylesheet: every element has a class.
 * - `toastAuthFail()` is an `onAuthFail` for `secureFetch`: "Session expired. Please log in
 *   again." with a "Log in" link to `loginPath?next=<current path>`; after `delayMs` (5 s) the
 *   page goes there by itself (`location.replace`, like the default handler). Dismissing the
 *   toast cancels that, so the person can stay and copy unsaved input; the page's next
 *   failing call shows it again. On the login page itself it does nothing.
 */

const CLASS = 'latchkey-toast'

/** @type {Record<string, Partial<CSSStyleDeclaration>>} CSSOM only: never a style attribute string. */
const LOOK = {
  region: {
    position: 'fixed',
    right: '1rem',
    bottom: '1rem',
    left: 'auto',
    zIndex: '2147483647',
    display: 'flex',
    flexDirection: 'column',
    alignItems: 'flex-end',
    gap: '0.5rem',
    maxWidth: 'calc(100vw - 2rem)',
  },
  toast: {
    display: 'flex',
    alignItems: 'center',
    flexWrap: 'wrap',
    gap: '0.75rem',
    maxWidth: '28rem',
    padding: '0.75rem 0.75rem 0.75rem 1rem',
    borderRadius: '0.5rem',
    background: '#1f2933',
    color: '#ffffff',
    boxShadow: '0 0.25rem 1rem rgba(0, 0, 0, 0.3)',
    font: 'inherit',
    lineHeight: '1.4',
  },
  message: { margin: '0', flex: '1 1 12rem' },
  action: { color: '#9fd3ff', fontWeight: '600', textDecoration: 'underline' },
  close: {
    font: 'inherit',
    fontSize: '1.25rem',
    lineHeight: '1',
    padding: '0.25rem 0.5rem',
    color: 'inherit',
    background: 'transparent',
    border: '1px solid rgba(255, 255, 255, 0.5)',
    borderRadius: '0.25rem',
    cursor: 'pointer',
  },
}

/**
 * @typedef {object} ToastOptions
 * @property {{ label: string, href: string, onClick?: (event: MouseEvent) => void }} [action]
 *   a link shown after the message
 * @property {number} [timeoutMs]  dismiss by itself after this long; default: the toaster's (0 = never)
 * @property {() => void} [onDismiss]  runs once when the toast goes, however it goes
 */

/**
 * @typedef {object} ToastHandle
 * @property {HTMLElement} element  the toast (class `latchkey-toast`)
 * @property {() => void} dismiss   removes it (no-op when already gone)
 * @property {() => boolean} open   still shown?
 */

/**
 * @typedef {object} ToasterOptions
 * @property {HTMLElement} [root]      where the toast region goes; default `document.body`
 * @property {boolean} [styled]        default true: built-in look via the CSSOM; false: classes only
 * @property {number} [timeoutMs]      default 0: toasts stay until dismissed
 * @property {string} [dismissLabel]   accessible name of the close button; default 'Dismiss'
 */

/**
 * A toaster: a function that shows a message as a toast.
 * @param {ToasterOptions} [options]
 * @returns {(message: string, options?: ToastOptions) => ToastHandle}
 */
export function createToast({ root, styled = true, timeoutMs: defaultTimeout = 0, dismissLabel = 'Dismiss' } = {}) {
  /** @type {HTMLElement | null} */
  let region = null
  /** @type {ToastHandle[]} oldest first */
  const shown = []

  /** @param {KeyboardEvent} event */
  const onKey = (event) => {
    if (event.key == 'Escape' && !event.defaultPrevented && shown.length) shown[shown.length - 1].dismiss()
  }

  /**
   * @template {keyof HTMLElementTagNameMap} K
   * @param {K} tag
   * @param {string} part
   * @param {HTMLElement} parent
   */
  const make = (tag, part, parent) => {
    const el = document.createElement(tag)
    el.className = part ? `${CLASS}-${part}` : CLASS
    if (styled) Object.assign(el.style, LOOK[part || 'toast'])
    return parent.appendChild(el)
  }

  return function toast(message, { action, timeoutMs = defaultTimeout, onDismiss } = {}) {
    // Toasts that the page removed itself (e.g. by replacing the body) are gone.
    for (const stale of shown.filter((h) => !h.element.isConnected)) stale.dismiss()
    const parent = root || document.body
    if (!region || !region.isConnected) region = make('div', 'region', parent)
    // The element that had the focus when the toast appeared: it gets it back on dismissal.
    const before = document.activeElement
    const element = make('div', '', region)
    const text = make('p', 'message', element)
    text.setAttribute('role', 'alert')
    text.setAttribute('aria-atomic', 'true')
    text.textContent = message
    if (action) {
      const link = make('a', 'action', element)
      link.href = action.href
      link.textContent = action.label
      if (action.onClick) link.addEventListener('click', action.onClick)
    }
    const close = make('button', 'close', element)
    close.type = 'button'
    close.setAttribute('aria-label', dismissLabel)
    close.textContent = '×'

    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer
    const handle = {
      element,
      open: () => shown.includes(handle),
      dismiss() {
        const i = shown.indexOf(handle)
        if (i < 0) return
        shown.splice(i, 1)
        clearTimeout(timer)
        const hadFocus = element.contains(document.activeElement)
        element.remove()
        if (hadFocus && before instanceof HTMLElement && before.isConnected) before.focus()
        if (!shown.length) document.removeEventListener('keydown', onKey)
        onDismiss?.()
      },
    }
    close.addEventListener('click', handle.dismiss)
    if (!shown.length) document.addEventListener('keydown', onKey)
    shown.push(handle)
    if (timeoutMs > 0) timer = setTimeout(handle.dismiss, timeoutMs)
    return handle
  }
}

/** @type {ReturnType<typeof createToast> | undefined} */
let shared

/**
 * Shows a toast with the default toaster (created on first use).
 * @param {string} message
 * @param {ToastOptions} [options]
 * @returns {ToastHandle}
 */
export function toast(message, options) {
  return (shared ||= createToast())(message, options)
}

/**
 * @typedef {object} AuthFailOptions
 * @property {string} [loginPath]  default '/login'
 * @property {string} [message]    default 'Session expired. Please log in again.'
 * @property {string} [actionLabel] default 'Log in'
 * @property {number} [delayMs]    default 5000: then the page goes to the login page by itself;
 *   `Infinity`: only when the link is followed
 * @property {(message: string, options?: ToastOptions) => ToastHandle} [toast]  default: `toast`
 */

/**
 * An `onAuthFail` for `secureFetch`/`createClient` that shows a toast instead of `alert()`.
 * @param {AuthFailOptions} [options]
 * @returns {() => void}
 */
export function toastAuthFail({
  loginPath = '/login',
  message = 'Session expired. Please log in again.',
  actionLabel = 'Log in',
  delayMs = 5000,
  toast: show = toast,
} = {}) {
  /** @type {ToastHandle | null} */
  let current = null
  return () => {
    const { pathname, search } = location
    // Already on the login page: it asks the person to sign in anyway.
    if (pathname == new URL(loginPath, location.href).pathname) return
    // One toast at a time, however many refreshes failed while it is shown.
    if (current?.open()) return
    const target = loginPath + '?next=' + encodeURIComponent(pathname + search)
    // replace, not assign: Back from the login page must not return to a page that only
    // sends the person to the login page again.
    const go = () => {
      current?.dismiss()
      location.replace(target)
    }
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer
    current = show(message, {
      action: {
        label: actionLabel,
        href: target,
        onClick(event) {
          // A plain click replaces the page; a modified one (new tab or window) is the browser's.
          if (event.button || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return
          event.preventDefault()
          go()
        },
      },
      onDismiss: () => clearTimeout(timer),
    })
    if (delayMs < Infinity) timer = setTimeout(go, delayMs)
  }
}
