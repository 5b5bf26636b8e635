//! A local emulator of the Azure Data Protection endpoints the operator uses.
