// The native loader moved to src/native/addon.ts (io/ maps files through it and must not sit above backend/).
// This re-export keeps existing imports working until they move.
export { WTYPE, addonLoadError, loadAddon, requireAddon, NativeUnavailableError, type NativeAddon, type CpuInfo } from '../../native/addon.js';
