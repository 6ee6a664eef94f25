//! Meanings of the Twilio error codes a Lookup bulk job may report.
//!
//! Texts follow the titles of Twilio's public error dictionary
//! (<https://www.twilio.com/docs/api/errors/NNNNN>). For 60611 and 60616 we
//! could not find Twilio's public wording, so their text is deliberately
//! neutral rather than guessed; replace it once the dictionary entry is
//! confirmed. Codes not listed here pass through with no meaning.

/// Twilio's meaning of a Lookup error code, when we know it.
pub fn meaning(code: i64) -> Option<&'static str> {
    Some(match code {
        60606 => "Lookup package is not enabled",
        60607 => "Lookup unsupported country",
        60608 => "Lookup provider replied with an error",
        60611 => "Lookup error 60611 (see Twilio's error dictionary)",
        60612 => "Requested phone number not mobile",
        60614 => "Lookup request must be completed in a different Twilio region",
        60616 => "Lookup error 60616 (see Twilio's error dictionary)",
        60617 => "Lookup: not enough request parameters",
        60619 => "Lookup request cannot be completed in Twilio region",
        60626 => "Phone number rate limit exceeded",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::meaning;

    #[test]
    fn every_listed_code_has_a_meaning_and_others_do_not() {
        for code in [
            60606, 60607, 60608, 60611, 60612, 60614, 60616, 60617, 60619, 60626,
        ] {
            assert!(meaning(code).is_some(), "{code}");
        }
        assert_eq!(
            meaning(60608),
            Some("Lookup provider replied with an error")
        );
        assert_eq!(meaning(60609), None);
        assert_eq!(meaning(-1), None);
    }
}
