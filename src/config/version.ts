/** tpasst's version, printed by `--version`. */
export const TPASST_VERSION = "0.1.0";
