//! `ferry build`: runs the app's `next build` with Ferry's adapter and writes the deployment bundle.
