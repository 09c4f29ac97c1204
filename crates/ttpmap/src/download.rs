//! Downloads of assets (ATT&CK bundle, later model folders). (Being written.)
