//! The mail templates (`templates/mail/*.txt` and `*.html`), filled by plain substitution.
//! A `.txt` template's first line is `Subject: …`. Values are HTML-escaped in the HTML part.

use super::MailKind;

/// What a template may use: `{{site}}`, `{{email}}`, `{{new_email}}`, `{{link}}`.
pub struct Values<'a> {
    pub site: &'a str,
    pub email: &'a str,
    pub new_email: &'a str,
    pub link: &'a str,
}

fn sources(kind: MailKind) -> (&'static str, &'static str) {
    macro_rules! t {
        ($name:literal) => {
            (
                include_str!(concat!("../../templates/mail/", $name, ".txt")),
                include_str!(concat!("../../templates/mail/", $name, ".html")),
            )
        };
    }
    match kind {
        MailKind::VerifyEmail => t!("verify_email"),
        MailKind::ResetPassword => t!("reset_password"),
        MailKind::ConfirmEmailChange => t!("confirm_email_change"),
        MailKind::PasswordChanged => t!("password_changed"),
        MailKind::PasswordReset => t!("password_reset"),
        MailKind::EmailChanged => t!("email_changed"),
        MailKind::MfaDisabled => t!("mfa_disabled"),
    }
}

const LAYOUT: &str = include_str!("../../templates/mail/layout.html");

/// Escapes text for HTML content and attribute values.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn fill(template: &str, v: &Values<'_>, escape: fn(&str) -> String) -> String {
    template
        .replace("{{site}}", &escape(v.site))
        .replace("{{email}}", &escape(v.email))
        .replace("{{new_email}}", &escape(v.new_email))
        .replace("{{link}}", &escape(v.link))
}

/// (subject, text, html) of a message of `kind`.
pub fn render(kind: MailKind, v: &Values<'_>) -> (String, String, String) {
    let (txt, html) = sources(kind);
    let (first, body) = txt.split_once('\n').unwrap_or((txt, ""));
    let subject = first.strip_prefix("Subject: ").unwrap_or(first).trim();
    let text = fill(body.trim_start_matches('\n'), v, |s| s.to_owned());
    let content = fill(html, v, html_escape);
    let html = LAYOUT
        .replace("{{subject}}", &html_escape(subject))
        .replace("{{site}}", &html_escape(v.site))
        .replace("{{content}}", &content);
    (subject.to_owned(), text, html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_has_a_subject_and_its_link_in_both_parts() {
        for kind in [
            MailKind::VerifyEmail,
            MailKind::ResetPassword,
            MailKind::ConfirmEmailChange,
            MailKind::PasswordChanged,
            MailKind::PasswordReset,
            MailKind::EmailChanged,
            MailKind::MfaDisabled,
        ] {
            let v = Values {
                site: "https://auth.example",
                email: "a@example.com",
                new_email: "b@example.com",
                link: "https://auth.example/x#token=T&u",
            };
            let (subject, text, html) = render(kind, &v);
            assert!(!subject.is_empty() && !subject.contains('\n'), "{kind:?}");
            assert!(!text.contains("{{") && !html.contains("{{"), "{kind:?}");
            if kind != MailKind::EmailChanged {
                assert!(
                    text.contains("https://auth.example/x#token=T&u"),
                    "{kind:?}"
                );
                assert!(
                    html.contains("https://auth.example/x#token=T&amp;u"),
                    "{kind:?}"
                );
            }
        }
    }

    #[test]
    fn html_values_are_escaped() {
        let v = Values {
            site: "s",
            email: "<script>@x.y",
            new_email: "n",
            link: "l",
        };
        let (_, text, html) = render(MailKind::VerifyEmail, &v);
        assert!(html.contains("&lt;script&gt;@x.y") && !html.contains("<script>"));
        assert!(text.contains("<script>@x.y"));
    }
}
