"""Privacy accounting: epsilon from the Opacus accountants, and the bounds a DP guarantee
puts on re-identification and label guessing."""
