/* cport: symbol export macro shared by every public header. */
#ifndef CPORT_EXPORT_H
#define CPORT_EXPORT_H

/* CPORT_BUILDING_SHARED is set while cport itself is built as a shared
 * library; CPORT_USING_SHARED is set by consumers of that shared library on
 * Windows. Everything not marked CPORT_API is hidden. */
#if defined(_WIN32)
#if defined(CPORT_BUILDING_SHARED)
#define CPORT_API __declspec(dllexport)
#elif defined(CPORT_USING_SHARED)
#define CPORT_API __declspec(dllimport)
#else
#define CPORT_API /* static library */
#endif
#elif defined(CPORT_BUILDING_SHARED) && defined(__GNUC__)
#define CPORT_API __attribute__((visibility("default")))
#else
#define CPORT_API
#endif

#endif /* CPORT_EXPORT_H */
