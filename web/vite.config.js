import { defineConfig } from "vite";

// The build goes to dist/, which is committed and embedded in the Go
// binary (web/embed.go); `make web` rebuilds it.
export default defineConfig({
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    // One CSS and one JS file: the page's Content-Security-Policy allows
    // only its own files (no inline scripts or styles).
    cssCodeSplit: false,
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 1024,
  },
});
