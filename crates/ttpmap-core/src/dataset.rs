//! Labelled datasets: TRAM2, AnnoCTR, emulation plans, ATT&CK procedure examples. (Being written.)
