// Herald's service worker for Web Push (placeholder: the display and click handling are
// being written).
self.addEventListener("push", () => {});
